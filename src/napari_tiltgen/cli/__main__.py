import sys

from napari_tiltgen.cli import main

sys.exit(main())
