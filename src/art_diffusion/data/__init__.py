from art_diffusion.data.datamodule import ArtDataModule, DemoDataModule

__all__ = ["ArtDataModule", "DemoDataModule"]
