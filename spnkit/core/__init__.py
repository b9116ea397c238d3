"""The core: interfaces, hooks, the plugin manager, recipes, building, stages and pipelines.

It knows no concrete plugin (built-ins arrive through the hooks like third-party ones) and never
imports the engine, the data loader or the command line."""
