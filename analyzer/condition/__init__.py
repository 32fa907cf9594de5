"""Falco condition language: tokenizer, parser, AST, macro/list expansion and
evt.type inference, following libsinsp's filter grammar."""
