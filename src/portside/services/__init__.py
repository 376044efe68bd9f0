"""Domain operations. The only way upper layers touch the database and storage."""
