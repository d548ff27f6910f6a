"""tomopick's algorithms: pure numpy/scipy/scikit-learn functions on arrays.

Nothing in this package imports pyworkflow or pwem.
"""
