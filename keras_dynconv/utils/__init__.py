"""Utilities: the MADDs / parameter profiler."""

from keras_dynconv.utils.profiler import ParamCount
from keras_dynconv.utils.profiler import count_madds
from keras_dynconv.utils.profiler import count_params
from keras_dynconv.utils.profiler import madds_by_layer

__all__ = ["ParamCount", "count_madds", "count_params", "madds_by_layer"]
