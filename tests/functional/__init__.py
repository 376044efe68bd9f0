"""Functional tests: a real ``portside serve`` driven over HTTP (SQLite and PostgreSQL)."""
