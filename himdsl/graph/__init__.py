"""Graph stage: the dependency graph (`build`) and its drawings (`render`)."""
