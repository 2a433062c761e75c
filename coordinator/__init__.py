"""Head-side coordinator: fans Step 2 trials out to rigs over SSH and feeds results to Optuna."""
