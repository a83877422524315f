//! A typed client for the Lago API (placeholder, filled below).
