"""The names of choices whose code imports diffusers (architectures, model sizes, conditionings, prediction
objectives, solvers), defined once here in the core, so that the config and the command line can offer
them without importing diffusers; the modules that implement them import these tuples."""

__all__ = ["ARCHITECTURES", "CONDITIONINGS", "OBJECTIVES", "PRESETS", "SOLVERS"]

ARCHITECTURES = ("unet", "dit", "mlp")
PRESETS = ("tiny", "small", "base")
CONDITIONINGS = ("none", "class", "text")
OBJECTIVES = ("eps", "v", "x0", "edm", "flow")
SOLVERS = ("ddpm", "ddim", "euler", "heun")
