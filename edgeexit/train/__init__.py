"""Training: AEP weighted ensemble loss, EENet L_v2, budget-aware gater (bi-level)."""
