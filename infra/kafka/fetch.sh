#!/usr/bin/env bash
# Fetch the Apache Kafka broker (kafka_2.13, version pinned in pom.xml) and its
# runtime dependencies from Maven Central into infra/kafka/.cache/lib/.
# Idempotent: when the cache matches pom.xml it returns at once.
# Needs: mvn (3.8+) on PATH when the cache is missing. Maven's local repo (~/.m2) is reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
lib="$cache/lib"
stamp="$lib/.complete"

want="$(sha256sum "$here/pom.xml" | cut -d' ' -f1)"
[[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && exit 0

mkdir -p "$cache"
exec 9>"$cache/fetch.lock"
flock 9  # one fetch at a time; a concurrent caller waits, then finds the cache ready
[[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && exit 0

command -v mvn >/dev/null 2>&1 || {
  echo "fetch.sh: 'mvn' not found on PATH; fetching the Kafka broker needs Maven 3.8+ (and Java 17+)." >&2
  exit 2
}
started=$SECONDS
staging="$cache/lib.partial"
rm -rf "$staging"
echo "fetch.sh: resolving Kafka broker classpath from Maven Central (pom: $here/pom.xml) ..."
if ! mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$staging" >"$cache/fetch.log" 2>&1; then
  echo "fetch.sh: maven failed; last lines of $cache/fetch.log:" >&2
  tail -n 40 "$cache/fetch.log" >&2
  exit 1
fi
ls "$staging"/kafka_2.13-*.jar >/dev/null 2>&1 || {
  echo "fetch.sh: maven finished but kafka_2.13 jar is missing in $staging" >&2
  exit 1
}
echo "$want" >"$staging/.complete"
rm -rf "$lib"
mv "$staging" "$lib"
echo "fetch.sh: $(ls "$lib"/*.jar | wc -l) jars ($(du -sh "$lib" | cut -f1)) in $lib, $((SECONDS - started)) s"
