"""Running a model on images and video: the inference modes (`modes`: whole, sliding window, multi-scale, flip),
the one-call `Segmenter` (`segmenter`) and the overlapped video pipeline (`video`)."""
