"""The IMU window contract in practice: resampling, windowing, validation, the prepared
window cache, the teacher-embedding cache and input reading for embedding."""
