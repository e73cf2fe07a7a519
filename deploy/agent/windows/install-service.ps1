# Installs the fleetpulse agent as a Windows service with WinSW (see fleetpulse-agent.xml).
# Run elevated. Expects the agent's embedded Python under $env:ProgramFiles\fleetpulse-agent\python
# (pip install fleetpulse into it) and WinSW-x64.exe next to this script.
$ErrorActionPreference = "Stop"
$here = Split-Path -Parent $MyInvocation.MyCommand.Path
$state = Join-Path $env:ProgramData "fleetpulse-agent"
New-Item -ItemType Directory -Force -Path $state | Out-Null
# state (spool, sequence counter) readable only by SYSTEM and Administrators
icacls $state /inheritance:r /grant:r "SYSTEM:(OI)(CI)F" "Administrators:(OI)(CI)F" | Out-Null
if (-not (Test-Path (Join-Path $state "agent.toml"))) {
    Copy-Item (Join-Path $here "..\agent.toml") (Join-Path $state "agent.toml")
}
Copy-Item (Join-Path $here "WinSW-x64.exe") (Join-Path $here "fleetpulse-agent.exe") -Force
& (Join-Path $here "fleetpulse-agent.exe") install
& (Join-Path $here "fleetpulse-agent.exe") start
