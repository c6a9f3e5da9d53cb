"""The DCGAN of PyTorch's examples (dcgan/main.py) for 64x64 images: a generator of
ConvTranspose2d + BatchNorm + ReLU ending in Tanh, a discriminator of Conv2d + BatchNorm +
LeakyReLU ending in Sigmoid, weights_init, BCELoss, two Adam optimizers, and the reference's
training step (D on real, D on fake, G through D). Widths `ngf`/`ndf` are 64 in the reference.
Synthetic images in [-1, 1].

In: a torch-like module, a size, a numpy Generator. Out: a perf.models.Case.
"""

from __future__ import annotations

CONFIG = {"tiny": {"nz": 8, "ngf": 2, "ndf": 2, "batch": 2}, "small": {"nz": 100, "ngf": 16, "ndf": 16, "batch": 32}}


def build(torch, size, rng):
    from perf.models import Case

    nn, optim = torch.nn, torch.optim
    cfg = CONFIG[size]
    nz, ngf, ndf, nc = cfg["nz"], cfg["ngf"], cfg["ndf"], 3

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            torch.nn.init.normal_(m.weight.data, 0.0, 0.02)
        elif classname.find("BatchNorm") != -1:
            torch.nn.init.normal_(m.weight.data, 1.0, 0.02)
            torch.nn.init.zeros_(m.bias.data)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 8),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
                nn.Tanh(),
            )

        def forward(self, input):
            return self.main(input)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 4),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 8),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
                nn.Sigmoid(),
            )

        def forward(self, input):
            return self.main(input)

    netG = Generator()
    netG.apply(weights_init)
    netD = Discriminator()
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    real_label, fake_label = 1, 0
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    real = torch.tensor(rng.random((cfg["batch"], nc, 64, 64), dtype="float32") * 2 - 1)

    def train_step(real_cpu):
        netG.train()  # (`infer` switches them to eval)
        netD.train()
        # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        noise = torch.randn(batch_size, nz, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()
        # (2) update G: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        return errD, errG

    def infer(real_cpu):
        netG.eval()
        netD.eval()
        with torch.no_grad():
            noise = torch.randn(real_cpu.size(0), nz, 1, 1)
            return netD(netG(noise)).view(-1), netD(real_cpu).view(-1)

    return Case("dcgan", {"netG": netG, "netD": netD}, (real,), train_step, infer, [optimizerD, optimizerG])
