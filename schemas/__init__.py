"""assay.schemas"""
