"""Model families, all behind the protocol in ``medgen.models.base``."""
from medgen.models.registry import register

register("ldm", "medgen.models.ldm:LatentDiffusion")
register("ddpm", "medgen.models.ddpm:PixelDiffusion")
register("gan", "medgen.models.gan:GAN")
register("vae", "medgen.models.vae:VAE")
register("vae-gan", "medgen.models.vaegan:VAEGAN")
register("conv-ae", "medgen.models.conv_ae:ConvAutoencoder")
register("mask-ddpm", "medgen.models.mask_diffusion:MaskDiffusion")
register("patch-features", "medgen.models.patch_features:PatchFeatures")
register("mask-controlnet", "medgen.models.mask_controlnet:MaskControlNet")
register("selfsup-anomaly", "medgen.models.selfsup_anomaly:SelfSupAnomaly")
