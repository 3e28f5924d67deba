"""assay.flows"""
