"""assay.examples: the demo's bundled data (a Jigsaw subset, recorded GPT-4 answers) and question files,
shipped as package data so `assay demo` runs from an installed wheel (see data/jigsaw/README.md)."""
