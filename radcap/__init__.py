"""radcap: radiology image captioning, frozen VGG16 and a merge-style LSTM decoder.

Modules, in data-flow order: `config`, `demo`, `datasets`, `images`,
`features`, `text`, `model`, `train`, `decode`, `evaluate`, `search`,
`plots`, `cli`; `download` fetches ROCO from Kaggle.
Importing radcap loads no TensorFlow and touches no network.
"""

__version__ = "0.1.0"
