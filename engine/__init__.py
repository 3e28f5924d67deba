"""assay.engine"""
