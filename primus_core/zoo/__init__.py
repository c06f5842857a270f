"""Model directories, the zoo (entries, Hub pull/push, checksums) and the reference-checkpoint
import."""
