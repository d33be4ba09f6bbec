"""A plain-PyTorch transcription of the article's training loop: the measuring stick for benchmarks/compare.py.

Kept as the article wrote it, flaws included (targets ImageNet-normalised but compared with a Sigmoid output,
a serial verify-every-file scan before training). Only two things differ: the device is an argument instead of
a hard-coded ``.cuda()``, and the VGG16 weights come from this project's offline resolver instead of a download.
Not part of the package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import datasets, models, transforms

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class ConvDiffusionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(64), nn.MaxPool2d(2))
        self.enc2 = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(128), nn.MaxPool2d(2))
        self.enc3 = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(256), nn.MaxPool2d(2))
        self.dec1 = nn.Sequential(nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                                  nn.BatchNorm2d(128))
        self.dec2 = nn.Sequential(nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                                  nn.BatchNorm2d(64))
        self.dec3 = nn.Sequential(nn.ConvTranspose2d(64, 3, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d1 = self.dec1(e3) + e2
        d2 = self.dec2(d1) + e1
        return self.dec3(d2)


class VGGLoss(nn.Module):
    def __init__(self, vgg_state: dict[str, torch.Tensor]):
        super().__init__()
        vgg = models.vgg16(weights=None).features[:16]
        vgg.load_state_dict(vgg_state)  # the article: models.vgg16(pretrained=True).features[:16]
        self.vgg = vgg.eval()
        for p in self.vgg.parameters():
            p.requires_grad = False

    def forward(self, x, y):
        return F.mse_loss(self.vgg(x), self.vgg(y))


def is_valid_image(path: str) -> bool:
    try:
        Image.open(path).verify()
        return True
    except Exception:
        return False


def article_transform(image_size: int = 128) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def article_dataset(root: str, image_size: int = 128) -> datasets.ImageFolder:
    """The article's dataset: every file opened and verified serially before training starts."""
    return datasets.ImageFolder(root, transform=article_transform(image_size), is_valid_file=is_valid_image)


def denormalize(output: torch.Tensor) -> torch.Tensor:
    """The article's inference step: undo the ImageNet normalisation on the model output, then clip to [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=output.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=output.device).view(1, 3, 1, 1)
    return (output * std + mean).clamp(0, 1)


class ArticleTrainer:
    """The article's loop, one optimizer step at a time, so a benchmark can time and count steps."""

    def __init__(self, vgg_state, device="cpu", lr=1e-3, step_size=30, gamma=0.1):
        self.device = torch.device(device)
        self.model = ConvDiffusionModel().to(self.device)
        self.criterion_mse = nn.MSELoss()
        self.criterion_vgg = VGGLoss(vgg_state).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=step_size, gamma=gamma)

    def step(self, images: torch.Tensor) -> float:
        images = images.to(self.device)
        outputs = self.model(images)
        loss = self.criterion_mse(outputs, images) + self.criterion_vgg(outputs, images)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def end_epoch(self) -> None:
        self.scheduler.step()
