"""assay.labeling"""
