//! The `.env` file of the app: validation, serialization and atomic merge (filled in).
