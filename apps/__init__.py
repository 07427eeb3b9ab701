"""Pure flow compilers, one module per network feature. Each takes a View (model + chassis runtime) and
returns Flow/Group values; none of them does I/O or keeps state. apps/compiler.py decides what to
recompile after a change and keeps incremental compiles equal to full ones."""
