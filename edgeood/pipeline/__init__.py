"""The export pipeline: its stages (load, prepare, precision, bind, fit, fold, calibrate,
monitor, save), the fitting and calibration passes over the data, and recipes."""
