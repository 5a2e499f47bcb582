"""The AI viewer: what a multimodal model would see of the received video, and how well it
answers questions about it (task accuracy as the quality of experience).

spec       ViewerSpec (stream.viewer): sampling rate, resize budget, judge, questions
resize     Qwen2.5-VL's resize rule (sides multiples of 28, at most max_pixels)
intake     the receiver-side sampler: decoded frames at viewer.fps, stored losslessly
questions  question files (DeViBench's CSV, extended with ground truth and relevant boxes)
scenes     built-in scenes with ground truth: a document of real words, ArUco markers
judges     ocr (Tesseract), markers (OpenCV ArUco), mllm (any OpenAI-compatible server)
judging    run a judge over a cell's intake after the session; accuracy with Wilson intervals
offline    encode a clip (uniform or ROI) at given bitrates and judge it without a network
"""
