"""Per-chapter helpers: each module holds one chapter's parameter schema and the computations
behind its tables, so that the notebook cells stay short sentences."""
