import sys

from keras_dynconv.cli import main

sys.exit(main())
