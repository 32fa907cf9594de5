"""trace's analyzer: Falco rules compiled to DuckDB SQL, hunts, queries and reports."""
