"""assay.distill"""
