"""Search: choosing the student (space, predictor, halving) and the teacher (GRACE-style score)."""
