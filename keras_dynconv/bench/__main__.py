"""`python -m keras_dynconv.bench ...` is `keras-dynconv bench ...`."""

import sys

from keras_dynconv.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
