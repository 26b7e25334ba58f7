"""Model families, all behind the protocol in ``medgen.models.base``."""
from medgen.models.registry import register

register("ldm", "medgen.models.ldm:LatentDiffusion")
register("ddpm", "medgen.models.ddpm:PixelDiffusion")
