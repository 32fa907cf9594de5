"""Condition AST -> DuckDB SQL: the generator, the SQL runtime macros and
the public compiler API (analyzer.sql.compiler)."""
