"""Autoencoder tools: codebook requantization of a frozen VQ autoencoder, small autoencoders
trained from scratch, and their evaluation (reconstruction PSNR per scale, codebook usage)."""
