# Installs the fleetpulse agent as a Windows service with WinSW (see fleetpulse-agent.xml).
# Run elevated. Expects the agent's embedded Python under $env:ProgramFiles\fleetpulse-agent\python
# (pip install fleetpulse into it) and WinSW-x64.exe next to this script.
$ErrorActionPreference = "Stop"
$here = Split-Path -Parent $MyInvocation.MyCommand.Path
$state = Join-Path $env:ProgramData "fleetpulse-agent"
$service = Join-Path $env:ProgramFiles "fleetpulse-agent\service"
# Well-known SIDs, not names: group names are localised (e.g. "Administratoren").
$system = "S-1-5-18"
$admins = "S-1-5-32-544"

function Get-OwnerSid([string] $Path) {
    (Get-Acl -LiteralPath $Path).GetOwner([System.Security.Principal.SecurityIdentifier]).Value
}

# Any user may create folders in ProgramData and owns what they create: a folder made before this install
# could hand the user a config naming their own program as smartctl, run as LocalSystem, or the device key.
# Refuse anything there that SYSTEM or Administrators do not own.
if (Test-Path -LiteralPath $state) {
    $items = @(Get-Item -LiteralPath $state -Force) + @(Get-ChildItem -LiteralPath $state -Recurse -Force)
    $foreign = @($items | Where-Object { (Get-OwnerSid $_.FullName) -notin @($system, $admins) })
    if ($foreign.Count -gt 0) {
        throw "$state holds items owned by neither SYSTEM nor Administrators (first: $($foreign[0].FullName)): check and remove the folder, then run this script again"
    }
}
New-Item -ItemType Directory -Force -Path $state | Out-Null
# state (spool, device key, config, secrets) readable only by SYSTEM and Administrators, whatever was inherited
icacls $state /setowner "*$admins" /C | Out-Null
icacls $state /inheritance:r /grant:r "*${system}:(OI)(CI)F" "*${admins}:(OI)(CI)F" | Out-Null
if (Get-ChildItem -LiteralPath $state -Force) { icacls "$state\*" /reset /T /C | Out-Null }
if ($LASTEXITCODE -ne 0) { throw "icacls could not restrict $state (exit $LASTEXITCODE)" }
if (-not (Test-Path (Join-Path $state "agent.toml"))) {
    Copy-Item (Join-Path $here "..\agent.toml") (Join-Path $state "agent.toml")
}
# The service definition names the program LocalSystem runs: it lives where only administrators write,
# not in the folder the kit was unpacked to.
New-Item -ItemType Directory -Force -Path $service | Out-Null
Copy-Item -Force (Join-Path $here "WinSW-x64.exe") (Join-Path $service "fleetpulse-agent.exe")
Copy-Item -Force (Join-Path $here "fleetpulse-agent.xml") (Join-Path $service "fleetpulse-agent.xml")
& (Join-Path $service "fleetpulse-agent.exe") install
& (Join-Path $service "fleetpulse-agent.exe") start
