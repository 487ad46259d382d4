# cuda-python < 12.6 exposed the runtime API as cuda.cudart (same functions).
from cuda.bindings.runtime import *  # noqa: F403
