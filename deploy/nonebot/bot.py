# A minimal NoneBot2 for deploy/compose.yaml: the OneBot v11 adapter and the
# built-in echo plugin ("/echo hi" answers "hi"). It stands in for your own
# bots; DRIVER, HOST, PORT and ONEBOT_ACCESS_TOKEN come from the environment.
import nonebot
from nonebot.adapters.onebot.v11 import Adapter

nonebot.init()
nonebot.get_driver().register_adapter(Adapter)
nonebot.load_builtin_plugins("echo")

if __name__ == "__main__":
    nonebot.run()
