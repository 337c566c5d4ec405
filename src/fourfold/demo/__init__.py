"""The fraud demo: synthetic card transactions, simple history features and an XGBoost model."""
