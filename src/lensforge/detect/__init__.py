"""Detection machinery shared by training, evaluation and prediction: anchor points, the
task-aligned assigner, the IoU + DFL loss, decoding with class-aware NMS, COCO evaluation and a
FLOP counter. Models live in `lensforge.models.detection`; data in `lensforge.data.boxes`."""
