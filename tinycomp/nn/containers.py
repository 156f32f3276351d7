"""Sequential and ModuleList: children named "0", "1", ... as in PyTorch."""
from .module import Module


class ModuleList(Module):
    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: children must be Modules, got {type(module).__name__}")
        self._modules[str(len(self._modules))] = module
        return self

    def __getitem__(self, i):
        keys = list(self._modules)
        if isinstance(i, slice):
            return type(self)([self._modules[k] for k in keys[i]])
        return self._modules[keys[i]]

    def __setitem__(self, i, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: only Modules can be stored, got {type(module).__name__}")
        self._modules[list(self._modules)[i]] = module

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    def __init__(self, *modules):
        super().__init__(modules)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*list(self._modules.values())[i])
        return super().__getitem__(i)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x
