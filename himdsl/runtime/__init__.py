"""Runtime support imported by generated modules: the model base class, layers,
distributions, extern loading."""
