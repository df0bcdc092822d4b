"""Front end: source text → AST (`parser`), AST → source text (`printer`)."""
