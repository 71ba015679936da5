"""Training: DupMAE pre-training (:mod:`dupmae_ir.train.pretraining`) on the Hugging Face Trainer.

Kept import-cheap: torch and transformers are imported inside the functions that train.
"""
