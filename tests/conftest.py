import os

os.environ.setdefault("SPNKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
