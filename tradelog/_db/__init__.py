"""Database layer: declarative models, engines and migrations."""
