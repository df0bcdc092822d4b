"""Graph stage: the dependency graph (`build`), its text formats (`render`) and pictures (`draw`)."""
