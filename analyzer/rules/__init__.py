"""Falco rules files: loading (lists, macros, rules, exceptions, append and
override), compilation to expanded condition ASTs, and located findings."""
