"""A ResNet-18 for 32x32 inputs in the style of the CIFAR references (kuangliu/pytorch-cifar's
ResNet18: a 3x3 stem, four stages of two BasicBlocks with BatchNorm and projection shortcuts,
avg_pool2d 4, a Linear), cross-entropy, SGD with momentum and weight decay, CosineAnnealingLR.
The stage widths are (1, 2, 4, 8) x `width` (64 in the reference); `tiny` (for tests) has one block
per stage instead of two, which still has both kinds of shortcut (identity and projection) at half
the graph. Synthetic CIFAR-shaped data.

In: a torch-like module, a size, a numpy Generator. Out: a perf.models.Case.
"""

from __future__ import annotations

CONFIG = {"tiny": {"width": 4, "blocks": [1, 1, 1, 1], "batch": 2},
          "small": {"width": 16, "blocks": [2, 2, 2, 2], "batch": 32}}


def build(torch, size, rng):
    from perf.models import Case

    nn, F, optim = torch.nn, torch.nn.functional, torch.optim

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != self.expansion * planes:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(self.expansion * planes),
                )

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += self.shortcut(x)
            out = F.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self, block, num_blocks, width=64, num_classes=10):
            super().__init__()
            self.in_planes = width
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.layer1 = self._make_layer(block, width, num_blocks[0], stride=1)
            self.layer2 = self._make_layer(block, 2 * width, num_blocks[1], stride=2)
            self.layer3 = self._make_layer(block, 4 * width, num_blocks[2], stride=2)
            self.layer4 = self._make_layer(block, 8 * width, num_blocks[3], stride=2)
            self.linear = nn.Linear(8 * width * block.expansion, num_classes)

        def _make_layer(self, block, planes, num_blocks, stride):
            strides = [stride] + [1] * (num_blocks - 1)
            layers = []
            for s in strides:
                layers.append(block(self.in_planes, planes, s))
                self.in_planes = planes * block.expansion
            return nn.Sequential(*layers)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer1(out)
            out = self.layer2(out)
            out = self.layer3(out)
            out = self.layer4(out)
            out = F.avg_pool2d(out, 4)
            out = out.view(out.size(0), -1)
            out = self.linear(out)
            return out

    cfg = CONFIG[size]
    net = ResNet(BasicBlock, cfg["blocks"], width=cfg["width"])
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=200)
    b = cfg["batch"]
    inputs = torch.tensor(rng.standard_normal((b, 3, 32, 32), dtype="float32"))
    targets = torch.tensor(rng.integers(0, 10, b))

    def train_step(inputs, targets):
        net.train()
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        scheduler.step()  # once per epoch in the reference; an epoch is one batch here
        return loss

    def infer(inputs, targets):
        net.eval()
        with torch.no_grad():
            outputs = net(inputs)
            return criterion(outputs, targets), outputs.argmax(1)

    return Case("resnet18", {"net": net}, (inputs, targets), train_step, infer, [optimizer])
