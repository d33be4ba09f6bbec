"""Image metrics with our own offline VGG16: per-image MSE/PSNR/SSIM, LPIPS (VGG), and FD-VGG between image sets."""

from art_diffusion.metrics.fd_vgg import fd_vgg, fd_vgg_folders, frechet_distance
from art_diffusion.metrics.lpips import LPIPS
from art_diffusion.metrics.pixel import mse, pixel_metrics, psnr, ssim

__all__ = ["LPIPS", "fd_vgg", "fd_vgg_folders", "frechet_distance", "mse", "pixel_metrics", "psnr", "ssim"]
