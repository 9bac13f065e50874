"""Image-classification datasets for `nte`, loaded offline into numpy arrays."""

from ._dataset import Dataset as Dataset
from ._load import load as load
