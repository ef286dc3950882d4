"""Paper 2: a plug-and-play latent fusion module on the decoder side of a frozen learned codec.

Zhou et al., *Controllable Distortion-Perception Tradeoff Through Latent Diffusion for Neural Image
Compression*. The bitstream and the base codec never change. Training has two stages: an auxiliary
encoder g'_a (`aux_encoder`) whose quantized latents make the frozen g_s give perceptually better
images, then a small conditional latent diffusion model (`network`) that turns decoded latents into
such latents. At decode time tau in [0, 1] steers it (`module.LatentFusion`): tau = 0 is the base
decode bit for bit, tau = 1 the full transform.
"""
