"""Code generation backends. `tvm/` lowers Ember's IR to Apache TVM's Relax and
builds it; it is the only part of the compiler that imports TVM."""
